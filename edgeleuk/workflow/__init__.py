"""The microscope-side workflow, torch-free: calibrate a threshold, watch a folder, report per patient.

* :mod:`~edgeleuk.workflow.threshold`: pick the threshold for a target sensitivity (pure numpy);
* :mod:`~edgeleuk.workflow.calibrate`: ``edgeleuk calibrate``, writes a copy of the model carrying
  the threshold and its provenance (through :mod:`edgeleuk.io.modelwrite`);
* :mod:`~edgeleuk.workflow.watch` (+ ``arrivals``, ``csvlog``): ``edgeleuk watch``, classify images as
  they land, one durable CSV row each, resumable;
* :mod:`~edgeleuk.workflow.report` (+ ``report_data`` to read the CSV, ``report_html`` to draw the page):
  ``edgeleuk report``, a self-contained HTML page per predictions CSV.
"""
