//! Host topology, NIC queues and IRQs to a shard/core/queue plan.
