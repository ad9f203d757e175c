"""Objects: segmentation, mask filters, inpainting, objectness, smear checks, object names, removal verification."""
