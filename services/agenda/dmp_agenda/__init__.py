"""DMP agenda service: appointments and prevention reminders."""
