/* SPDX-License-Identifier: GPL-2.0 */
/* pktaccel: C helpers called from the Rust driver (see pktaccel_helpers.c). */
#ifndef PKTACCEL_HELPERS_H
#define PKTACCEL_HELPERS_H

#include <linux/types.h>

struct page;
struct vm_area_struct;

phys_addr_t pktaccel_page_to_phys(struct page *page);
void *pktaccel_page_address(struct page *page);
int pktaccel_page_count(struct page *page);
int pktaccel_set_memory(void *addr, int numpages, int mode);
void pktaccel_vma_set_cache_mode(struct vm_area_struct *vma, int mode);
int pktaccel_reject_ratelimit(void);
int pktaccel_current_tgid(void);
unsigned long pktaccel_current_mm(void);

#endif
