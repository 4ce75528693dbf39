"""The daily reconciliation: what Key Vault holds against what certsync did and what Exchange reported.
Takes ports; never imports an adapter."""
