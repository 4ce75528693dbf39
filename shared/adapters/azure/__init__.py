"""Azure backends: Key Vault, Storage tables and queues, Automation over ARM, and the role registry."""
