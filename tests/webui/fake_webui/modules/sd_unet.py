"""modules.sd_unet: a replacement UNet (TensorRT-style) is active when current_unet is not None."""

current_unet = None
current_unet_option = None
