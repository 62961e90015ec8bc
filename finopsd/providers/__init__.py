"""Provider adapters: pure translation between the canonical chat form and each upstream protocol."""
