"""Gymnasium environments of teamsrl."""
