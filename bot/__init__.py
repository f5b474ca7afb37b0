"""Khma: a Telegram and Viber chatbot through which residents tell CSOs what they need."""
