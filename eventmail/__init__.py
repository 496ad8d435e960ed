"""eventmail: an all-in-one mail server whose accounts are append-only, encrypted event logs."""
