"""The long-running trading process: feeds, brokers, recovery, control and notifications around the engine."""
