"""Junk filtering from the account's own history: reputation analysis, a Bayesian filter, the Rejects mailbox."""
