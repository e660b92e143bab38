"""The event stream's ML side: the consumer that turns the shop's events into spans, and the
feature store (Feast: definitions, the Redis online store, the spans' feature logs offline).

Runs in its own environment, `.venv-features` (features/requirements.lock): Feast 0.67 needs
numpy >= 2, TensorFlow 2.16 numpy < 2 (docs/event-stream.md). It imports only `contract` and
`settings`; nothing of TensorFlow, TFX or the pipeline. `features.services` (the loopback broker
and Redis) needs only the standard library, so the main environment's tests and make targets use
it too.
"""
