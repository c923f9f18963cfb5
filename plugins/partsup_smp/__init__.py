"""segmentation-models-pytorch / timm backbones plugin."""
