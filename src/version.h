#ifndef ORRERY_VERSION_H
#define ORRERY_VERSION_H
#define ORRERY_VERSION "0.1.0"
#endif
