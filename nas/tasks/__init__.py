"""Tasks: a model, its data, training and recovery, and accuracy of exported graphs."""
