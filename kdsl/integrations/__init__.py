"""Other trainers and servers: verl, verifiers, an HTTP reward server, Ray."""
