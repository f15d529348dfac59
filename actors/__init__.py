"""Ray actors: thin shells that load state, call `domain/`, persist, publish and reply."""
