"""Data layer shared by every detector family: read (``coco``), augment (``transforms``), batch
(``collate``, ``loader``); ``dataset_config`` says where the files are and ``demo`` makes a toy set."""
