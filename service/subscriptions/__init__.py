"""Subscriptions: every feed event matching a subscriber's filter, POSTed to its URL, signed (DESIGN
"Subscriptions: push to other services").

`model` (filters, pure), `signing` (secrets and Standard Webhooks headers), `sealing` (secrets encrypted at
rest), `address_guard` (which URLs may be called, checked again at connection time), `policy` (what an
attempt's outcome means: delivered, retry when, failed, disable; pure), `store` (the SQL) and `dispatch` (the
background task that fans events out into deliveries and makes the attempts).
"""
