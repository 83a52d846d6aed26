"""What the API and the UI both do: start jobs, restore safely, forget, pin, audit."""
