"""The pegasus (C11): latent and pixel paths between horses and birds, the class probe, the report."""
