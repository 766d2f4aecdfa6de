"""Model definitions the course trains and later compresses: `from helpers.models.gpt import GPT`, …

Each file holds one architecture; importing this package imports none of them.
"""
