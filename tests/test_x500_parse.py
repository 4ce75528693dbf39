"""Reading X.500 strings the way Exchange does (spec §4), comparing them as Exchange does, and the
TlsCertificateName `<I>issuer<S>subject` syntax with the cmdlets' host-name rule."""

from __future__ import annotations

import re

import pytest

from shared.errors import NameSyntaxError
from shared.x509.tls_certificate_name import TlsCertificateName
from shared.x509.x500 import X500Name, fold_case


def parts(text: str) -> list[list[tuple[str, str]]]:
    """The parsed (OID, value) pairs, RDN by RDN, in display order."""
    return [[(a.oid, a.value) for a in rdn] for rdn in X500Name.parse(text).rdns]


def canonical(text: str) -> str:
    return str(X500Name.parse(text))


# --- Syntax --------------------------------------------------------------------------------------


def test_comma_and_semicolon_both_separate_rdns():
    assert parts("CN=mail.contoso.com; O=Contoso, C=US") == [
        [("2.5.4.3", "mail.contoso.com")],
        [("2.5.4.10", "Contoso")],
        [("2.5.4.6", "US")],
    ]
    assert canonical("CN=a;O=b;C=US") == "CN=a, O=b, C=US"


def test_plus_makes_a_multi_valued_rdn_in_written_order():
    assert parts("OU=Mail+CN=mail.contoso.com, C=US") == [
        [("2.5.4.11", "Mail"), ("2.5.4.3", "mail.contoso.com")],
        [("2.5.4.6", "US")],
    ]
    assert canonical("OU=Mail+CN=x ,C=US") == "OU=Mail + CN=x, C=US"


def test_blanks_around_keys_and_values_are_ignored():
    assert canonical("  CN =  mail.contoso.com  ,\tO\t=\tContoso Ltd\t;  C= US  ") == (
        "CN=mail.contoso.com, O=Contoso Ltd, C=US"
    )
    assert canonical("CN = a  +  O = b") == "CN=a + O=b"


def test_inner_blanks_are_kept():
    assert parts("CN=two  spaces   inside") == [[("2.5.4.3", "two  spaces   inside")]]


def test_quoted_values_with_doubled_quotes():
    assert parts('CN="The ""Best"" Server", O="GoDaddy.com, Inc."') == [
        [("2.5.4.3", 'The "Best" Server')],
        [("2.5.4.10", "GoDaddy.com, Inc.")],
    ]
    assert parts('CN=""""') == [[("2.5.4.3", '"')]]
    assert parts('CN=""') == [[("2.5.4.3", "")]]
    assert parts('CN=" keep edges "  , O=x') == [[("2.5.4.3", " keep edges ")], [("2.5.4.10", "x")]]
    assert parts('CN="a;b+c=d<e>f#g" + O=x') == [[("2.5.4.3", "a;b+c=d<e>f#g"), ("2.5.4.10", "x")]]


def test_quoted_values_reprint_canonically():
    assert canonical('CN = "The ""Best"" Server" ; O = "Plain"') == 'CN="The ""Best"" Server", O=Plain'
    assert canonical('CN=" lead"') == 'CN=" lead"'
    assert canonical('CN=""') == 'CN=""'


def test_no_backslash_escaping():
    assert parts(r"CN=a\b, O=c\\d") == [[("2.5.4.3", "a\\b")], [("2.5.4.10", "c\\\\d")]]
    # A backslash does not escape the separator either.
    assert parts(r"CN=a\, O=b") == [[("2.5.4.3", "a\\")], [("2.5.4.10", "b")]]


def test_st_is_accepted_and_printed_as_s():
    assert parts("ST=Washington") == [[("2.5.4.8", "Washington")]]
    assert canonical("CN=x, ST=Washington, C=US") == "CN=x, S=Washington, C=US"
    assert canonical("st=Washington") == "S=Washington"
    assert canonical("S=Washington") == "S=Washington"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cn=x", "CN=x"),
        ("Cn=x, o=y, c=US", "CN=x, O=y, C=US"),
        ("e=a@b.example", "E=a@b.example"),
        ("DNQUALIFIER=q", "dnQualifier=q"),
        ("postalcode=98052", "PostalCode=98052"),
        ("serialNumber=42", "SERIALNUMBER=42"),
        ("dc=contoso, DC=com", "DC=contoso, DC=com"),
        ("tpmmodel=m", "TPMModel=m"),
    ],
)
def test_keys_are_case_insensitive(text, expected):
    assert canonical(text) == expected


def test_oid_keys():
    assert parts("OID.2.5.4.15=Private Organization") == [[("2.5.4.15", "Private Organization")]]
    assert parts("oid.2.5.4.15=x") == [[("2.5.4.15", "x")]]
    assert parts("2.5.4.15=Private Organization") == [[("2.5.4.15", "Private Organization")]]
    assert canonical("2.5.4.15=Private Organization") == "OID.2.5.4.15=Private Organization"
    # An OID with a key of its own re-prints with that key.
    assert canonical("OID.2.5.4.3=mail.contoso.com, 2.5.4.8=WA") == "CN=mail.contoso.com, S=WA"
    assert canonical("OID.1.3.6.1.4.1.311.60.2.1.3=US") == "OID.1.3.6.1.4.1.311.60.2.1.3=US"


def test_hex_values():
    name = X500Name.parse("CN=#ab cd 01, O=#0C0161")
    assert [(a.oid, a.value, a.is_hex) for r in name.rdns for a in r] == [
        ("2.5.4.3", "#ABCD01", True),
        ("2.5.4.10", "#0C0161", True),
    ]
    assert str(name) == "CN=#ABCD01, O=#0C0161"
    assert canonical("CN=#0a\t0B") == "CN=#0A0B"


def test_quoted_hash_is_text_not_hex():
    name = X500Name.parse('CN="#ABCD"')
    assert [(a.value, a.is_hex) for r in name.rdns for a in r] == [("#ABCD", False)]
    assert str(name) == 'CN="#ABCD"'


def test_empty_and_blank_text_is_the_empty_name():
    assert X500Name.parse("").rdns == ()
    assert X500Name.parse("  \t ").rdns == ()
    assert str(X500Name.parse("")) == ""


def test_values_with_other_characters_need_no_quotes():
    assert parts("O=Let's Encrypt, OU=http://certs.example/repo/, CN=*.contoso.com") == [
        [("2.5.4.10", "Let's Encrypt")],
        [("2.5.4.11", "http://certs.example/repo/")],
        [("2.5.4.3", "*.contoso.com")],
    ]


def test_unquoted_value_with_trigger_characters_is_quoted_on_reprint():
    assert canonical("CN=a=b") == 'CN="a=b"'
    assert canonical("CN=x<y>") == 'CN="x<y>"'
    assert canonical("CN=1#") == 'CN="1#"'


# --- Syntax errors -------------------------------------------------------------------------------


def syntax_error(text: str) -> str:
    with pytest.raises(NameSyntaxError) as info:
        X500Name.parse(text)
    return str(info.value)


def position(message: str) -> int:
    found = re.search(r"character (\d+)", message)
    assert found, f"no character position in {message!r}"
    return int(found.group(1))


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        pytest.param("CN=a, XX=1", 7, ["XX"], id="unknown-key"),
        pytest.param("CN=a, emailAddress=x@y", 7, ["emailAddress"], id="rfc4514-key-not-x500"),
        pytest.param("OID.CN=x", 1, ["OID.CN"], id="oid-prefix-without-oid"),
        pytest.param("1.40.5=x", 1, ["1.40.5"], id="invalid-oid"),
        pytest.param("CN=a, O", 7, ["="], id="missing-equals"),
        pytest.param("CN", 1, ["="], id="missing-equals-only-key"),
        pytest.param("CN=a,,O=b", 6, ["="], id="empty-rdn"),
        pytest.param('CN="abc', 4, ["quote"], id="unterminated-quote"),
        pytest.param('CN="a""', 4, ["quote"], id="unterminated-after-doubled"),
        pytest.param('CN="a" b', 8, ["quote"], id="text-after-closing-quote"),
        pytest.param('CN=ab"c', 6, ["quote"], id="quote-inside-unquoted"),
        pytest.param("CN=a,", 6, [","], id="trailing-comma"),
        pytest.param("CN=a; ", 7, [";"], id="trailing-semicolon"),
        pytest.param("CN=a +", 7, ["+"], id="trailing-plus"),
        pytest.param("CN=#ABC", 4, ["#ABC", "hex"], id="odd-hex"),
        pytest.param("CN=#GG, O=x", 4, ["#GG", "hex"], id="non-hex"),
        pytest.param("CN=#", 4, ["hex"], id="empty-hex"),
    ],
)
def test_syntax_errors_say_where(text, column, words):
    message = syntax_error(text)
    assert position(message) == column
    for word in words:
        assert word in message
    assert repr(text) in message


# --- Comparison ----------------------------------------------------------------------------------


def same(a: str, b: str) -> bool:
    return X500Name.parse(a).matches(X500Name.parse(b))


def test_matches_ignores_case():
    assert same("CN=Mail.Contoso.com, O=Contoso", "cn=MAIL.CONTOSO.COM, o=contoso")
    assert same("CN=Ärger", "CN=äRGER")


def test_matches_ignores_syntax_variants():
    assert same("CN=a, ST=WA", "CN=a; S=WA")
    assert same("CN = a , O = b", "CN=a, O=b")
    assert same('CN="a"', "CN=a")
    assert same("OID.2.5.4.3=a", "CN=A")


def test_matches_is_order_sensitive():
    assert not same("CN=a, O=b", "O=b, CN=a")
    assert not same("CN=a + O=b", "O=b + CN=a")
    assert not same("CN=a + O=b", "CN=a, O=b")


def test_matches_inner_spacing_and_every_character_matter():
    assert not same("CN=two  spaces", "CN=two spaces")
    assert not same('CN=" a"', "CN=a")
    assert not same("CN=a.contoso.com", "CN=a.contoso.com.")
    assert not same("CN=a", "CN=#0C0161")


def test_fold_case_is_ordinal_ignore_case():
    assert fold_case("Straße") == "STRAßE"
    assert fold_case("ß") == "ß"
    assert fold_case("ﬁle") == "ﬁLE"  # the 'fi' ligature has no one-character upper case
    assert fold_case("mail.contoso.com") == "MAIL.CONTOSO.COM"
    assert fold_case("éa") == "ÉA"
    assert len(fold_case("ßßa")) == 3
    assert not same("CN=straße", "CN=STRASSE")
    assert same("CN=straße", "CN=STRAßE")


# --- TlsCertificateName --------------------------------------------------------------------------

LE = "<I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"


def test_tls_name_round_trip():
    name = TlsCertificateName.parse(LE)
    assert str(name.issuer) == "CN=R11, O=Let's Encrypt, C=US"
    assert str(name.subject) == "CN=mail.contoso.com"
    assert str(name) == LE


def test_tls_name_issuer_is_optional():
    name = TlsCertificateName.parse("<S>CN=mail.contoso.com")
    assert name.issuer is None
    assert str(name) == "<S>CN=mail.contoso.com"
    assert name.matches(TlsCertificateName.parse(LE))
    assert TlsCertificateName.parse(LE).matches(name)


def test_tls_name_tags_are_case_insensitive():
    name = TlsCertificateName.parse("<i>cn=R11; o=Let's Encrypt; c=US<s>cn=mail.contoso.com")
    assert str(name) == LE
    assert TlsCertificateName.parse("<s>CN=mail.contoso.com").issuer is None


def test_tls_name_canonical_form_of_the_parts():
    name = TlsCertificateName.parse('<I> CN = R11 ; O = "Let\'s Encrypt" ; ST = x <S> CN = mail.contoso.com ')
    assert str(name) == "<I>CN=R11, O=Let's Encrypt, S=x<S>CN=mail.contoso.com"


def test_tls_name_matches_is_case_insensitive_and_order_sensitive():
    name = TlsCertificateName.parse(LE)
    assert name.matches(TlsCertificateName.parse(LE.upper()))
    assert not name.matches(TlsCertificateName.parse("<I>C=US, O=Let's Encrypt, CN=R11<S>CN=mail.contoso.com"))
    assert not name.matches(TlsCertificateName.parse("<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"))


def test_tls_name_issuer_containing_lt_is_rejected():
    with pytest.raises(NameSyntaxError, match="<") as info:
        TlsCertificateName.parse("<I>CN=a<b<S>CN=mail.contoso.com")
    assert "issuer" in str(info.value)
    assert position(str(info.value)) == 8
    with pytest.raises(NameSyntaxError, match="issuer"):
        TlsCertificateName.parse('<I>CN="a<b"<S>CN=mail.contoso.com', strict=False)


def test_tls_name_issuer_lt_position_with_trailing_blanks():
    with pytest.raises(NameSyntaxError) as info:
        TlsCertificateName.parse("<I>CN=a<b<S>CN=mail.contoso.com   ")
    assert position(str(info.value)) == 8


@pytest.mark.parametrize(
    "text",
    ["CN=mail.contoso.com", "<I>CN=R11", "<I>CN=R11, C=US", "", "   ", "<X>CN=mail.contoso.com", "S>CN=a.com"],
)
def test_tls_name_missing_subject_tag_is_rejected(text):
    for strict in (True, False):
        with pytest.raises(NameSyntaxError, match="<S>"):
            TlsCertificateName.parse(text, strict=strict)


def test_tls_name_part_syntax_errors_say_which_part():
    with pytest.raises(NameSyntaxError, match="issuer") as info:
        TlsCertificateName.parse("<I>CN=R11, XX=1<S>CN=mail.contoso.com")
    assert position(str(info.value)) == 9  # counted in the issuer part, which the message quotes
    assert "'CN=R11, XX=1'" in str(info.value)
    with pytest.raises(NameSyntaxError, match="subject") as info:
        TlsCertificateName.parse('<I>CN=R11<S>CN="mail.contoso.com')
    assert position(str(info.value)) == 4


@pytest.mark.parametrize(
    "subject",
    [
        "CN=mail.contoso.com",
        "CN=*.contoso.com",
        "CN=MAIL.Contoso.COM",
        "CN=mail",
        "CN=xn--bcher-kva.example",
        "OU=Mail, CN=mail.contoso.com, O=Contoso",
        "CN=mail.contoso.com, CN=Not A Host",
        'CN="mail.contoso.com", O="Contoso, Inc."',
        "CN=a-b.c1.example",
    ],
)
def test_strict_accepts_host_name_first_cn(subject):
    name = TlsCertificateName.parse("<S>" + subject)
    assert name.problems() == []


@pytest.mark.parametrize(
    ("subject", "cn"),
    [
        ("CN=Contoso Mail Server", "Contoso Mail Server"),
        ("CN=*contoso.com", "*contoso.com"),
        ("CN=mail.*.contoso.com", "mail.*.contoso.com"),
        ("CN=-mail.contoso.com", "-mail.contoso.com"),
        ("CN=mail-.contoso.com", "mail-.contoso.com"),
        ("CN=mail..contoso.com", "mail..contoso.com"),
        ("CN=mail.contoso.com.", "mail.contoso.com."),
        ("CN=mail_relay.contoso.com", "mail_relay.contoso.com"),
        ('CN=""', ""),
        ("CN=" + "a" * 64 + ".com", "a" * 64 + ".com"),
        ("CN=Not A Host, CN=mail.contoso.com", "Not A Host"),
        ("OU=x, CN=user@contoso.com", "user@contoso.com"),
        # Exchange reads from the first CN= up to the next comma: quotes and the rest of the RDN count.
        ('CN="mail.contoso.com,x"', """'"mail.contoso.com'"""),
        ("CN=mail.contoso.com + O=Contoso", "'mail.contoso.com + O=Contoso'"),
        ('CN=" mail.contoso.com"', """'" mail.contoso.com"'"""),
    ],
)
def test_strict_rejects_first_cn_that_is_not_a_host_name(subject, cn):
    shown = cn if cn.startswith("'") else repr(cn)
    with pytest.raises(NameSyntaxError) as info:
        TlsCertificateName.parse("<I>CN=R11<S>" + subject)
    assert shown in str(info.value)
    lenient = TlsCertificateName.parse("<I>CN=R11<S>" + subject, strict=False)
    assert str(lenient.subject) == str(X500Name.parse(subject))
    problems = lenient.problems()
    assert len(problems) == 1
    assert shown in problems[0]
    assert "DNS" in problems[0] or "host" in problems[0]


def test_strict_rejects_subject_without_cn():
    with pytest.raises(NameSyntaxError, match="CN"):
        TlsCertificateName.parse("<S>O=Contoso, C=US")
    lenient = TlsCertificateName.parse("<S>O=Contoso, C=US", strict=False)
    assert len(lenient.problems()) == 1
    assert "CN" in lenient.problems()[0]
    assert TlsCertificateName.parse("<S>", strict=False).subject.rdns == ()


def test_host_name_length_limits():
    ok = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 characters
    assert len(ok) == 253
    assert TlsCertificateName.parse("<S>CN=" + ok).problems() == []
    with pytest.raises(NameSyntaxError):
        TlsCertificateName.parse("<S>CN=" + ok + "b")


def test_problems_flags_issuer_with_lt_built_from_parts():
    # Only a certificate can give such an issuer (the parser refuses it); build the value directly.
    name = TlsCertificateName(X500Name.parse('CN="Bad <CA>"'), X500Name.parse("CN=mail.contoso.com"))
    problems = name.problems()
    assert len(problems) == 1
    assert "issuer" in problems[0]
    assert "<" in problems[0]


def test_problems_lists_every_problem():
    name = TlsCertificateName(X500Name.parse('CN="Bad <CA>"'), X500Name.parse("O=No CN"))
    assert len(name.problems()) == 2
