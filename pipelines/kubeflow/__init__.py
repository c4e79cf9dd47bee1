"""The Kubeflow pipeline: build training set -> train -> evaluate (kfp v2 SDK)."""
