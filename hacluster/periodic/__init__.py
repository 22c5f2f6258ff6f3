"""Periodic tasks under hacluster modes (leader, every, fanout).

Built in a later step on top of the coordinator; see DESIGN.md.
"""
