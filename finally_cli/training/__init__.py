"""Training: data, degradations, losses, the accelerate engine, configs."""
