"""What workers import: `connect`, the job block, its buffering and its transports."""
