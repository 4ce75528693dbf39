"""`certsync`, the admin's command line."""
