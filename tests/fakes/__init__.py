"""Local stand-ins for network services the tests cannot reach: small servers on 127.0.0.1."""
