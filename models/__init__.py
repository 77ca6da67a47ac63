"""The anomaly model: its shipped artifacts, training and conversion (TensorFlow) and a TF-free sanity evaluation."""
