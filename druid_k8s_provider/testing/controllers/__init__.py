"""Parts of the emulated cluster other than the kubelet: the scheduler, the Job and TTL controllers, the
container runtime, env resolution, and helpers they share (events, timestamps, resource arithmetic)."""
