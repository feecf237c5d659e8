"""baqylau package."""
