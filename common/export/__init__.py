"""Step 07's outputs: the rows to export (rows), their thumbnails (thumbs), the viewer's grids,
tiles and manifest (web), sprite sheets (sprites), the Gephi files (gephi) and the poster
(poster, with its label placement in poster_labels)."""
