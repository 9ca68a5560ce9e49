"""HTTP handlers, thin: authenticate, parse, one transaction, answer in the envelope."""
