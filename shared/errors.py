"""Exceptions certsync raises. Each message is one line a user can act on: what failed, on what, and
what to do. Messages never carry key material, passwords or fetched bodies."""

from __future__ import annotations


class CertsyncError(Exception):
    """Base class: the message is fit to show a user as it is."""


class DerError(CertsyncError):
    """Bytes that are not the DER structure we expected."""


class NameDecodeError(CertsyncError):
    """An X.509 Name that cannot be rendered the way Windows renders it."""


class CertificateInputError(CertsyncError):
    """A file or blob that does not yield the certificate(s) asked for."""


class NameSyntaxError(CertsyncError):
    """A TlsCertificateName or X.500 string that Exchange would not parse."""


class StorageError(CertsyncError):
    """A store (Azure Storage) refused or could not be reached; the message names the queue or table."""
