"""aqi package."""
