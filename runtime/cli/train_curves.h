/*
 * train_curves.h: training_curves.png (curves.c).
 */
#ifndef VBS_CLI_TRAIN_CURVES_H
#define VBS_CLI_TRAIN_CURVES_H

#include "trainer.h"

/* The loss parts, the validation Dice and uncertainty, and the learning rate
 * against the epoch, as a PNG at path; 1 on success, else 0 and err. */
int write_training_curves(const char *path, const vbs_epoch_log *log, int n, char *err, size_t errlen);

#endif
