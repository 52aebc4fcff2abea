"""Operator tools shared by the admin API and the command line: dead letters, event
history views, rules dry runs, loading the rules with the settings checks, and the
Celery configuration every process publishes with."""
