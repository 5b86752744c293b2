"""Applications over the models and data, like diffusers' `pipelines/` beside `models/`.

    edit         sketch-guided face editing with a trained run (`ilat-edit-face`)
    compare      editing methods side by side on a test set: grids and metrics (`ilat-compare`)
    pose_guide   pose-guided person synthesis, single frames and sequences (`ilat-pose-guide`)
    chain        train a chain of main.py runs, resumably (the demos' training)
    demo_faces   the face demo: toy chain, new-stroke edits, comparison (`ilat-demo-faces`)
    demo_poses   the pose demo: toy pose chain, poses grid, sequence, comparison (`ilat-demo-poses`)
    image_io     the image I/O they share: files, uint8 <-> tensor, labelled grids, GIF / MP4

Run introspection (training size, sketch style, resize mode) is in `ilat_ext.runs`; the command
lines are in `ilat_ext.cli`. Nothing here prints: results are returned, progress goes to a `log`
callable or `logging`, notes to `warnings`.
"""
