"""Test doubles of services we cannot run here: they speak the real wire protocol, so the real SDK
clients talk to them unchanged (see `tests.fakes.keyvault`)."""
