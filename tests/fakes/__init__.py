"""Fake vendor servers speaking real wire formats over real HTTP on 127.0.0.1."""
