"""The foundation every layer may use: one settings object and structured logging."""
