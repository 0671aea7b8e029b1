"""learnthumb: learned thumbnails for detection, segmentation and pose."""
