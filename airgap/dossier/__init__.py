"""The gate's dossier: what a reviewer signs off on before a bundle enters a closed network (docs/dossier.md)."""
