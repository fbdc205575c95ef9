"""Submission: whether a task pays for a new request, and what it remembers having paid for.

The two-phase intent record (written before the paid POST, completed with the request id after
it), where that record lives (Airflow's ``task_state_store`` or a ledger under ``state_path``), the
decision to reattach or submit, and spend: the price of a generation, the balance reserve and a
batch's budget.
"""
