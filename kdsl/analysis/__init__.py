"""Knowledge checks that run after type checking: decision tables and value ranges."""
