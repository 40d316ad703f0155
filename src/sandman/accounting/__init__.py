"""Accounting: the cost ledger, rates, budgets, usage reports, capacity and layout advice."""
