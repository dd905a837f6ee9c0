"""airgap: carry a whole GPU/LLM serving stack across an air gap."""

__version__ = "0.1.0"
