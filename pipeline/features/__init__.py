"""Features and labels: the versioned feature spec, the batch features and their store, the streaming
features a runtime advances bar by bar, the compiled step primitives they share with the strategies, and the
training targets."""
