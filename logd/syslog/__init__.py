"""Syslog: messages read as fields (parse), and the framings syslog senders use (framing)."""
