"""Shared pieces of the City Identity Explorer steps.

Only what two or more steps use lives here. Importing this package configures nothing.
"""
