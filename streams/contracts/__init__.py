"""The wire contracts of the Kafka side: what travels on the topics (events, update jobs, dead
letters). Pure: no Kafka, no I/O; producers and both worker kinds import them."""
