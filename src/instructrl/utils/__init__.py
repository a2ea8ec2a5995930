"""Small shared helpers: devices and precision, seeding, metrics logging, masked statistics."""
