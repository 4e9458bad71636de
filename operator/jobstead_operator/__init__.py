"""Kubernetes operator for Jobstead: reconciles JobHandler and CronSchedule resources."""
