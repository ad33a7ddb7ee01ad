// SPDX-License-Identifier: GPL-2.0
/*
 * pktaccel: the few helpers the Rust kernel crate of 7.3 does not wrap.
 *
 * Each is a one-line forwarder to a static inline or macro (which bindgen
 * cannot export) or to an exported symbol missing from the generated
 * bindings. They hold no state and take no locks; the Rust side documents
 * when each may be called.
 */
#include <linux/mm.h>
#include <linux/io.h>
#include <linux/pgtable.h>
#include <asm/set_memory.h>
#include <linux/ratelimit.h>
#include <linux/sched.h>
#include "pktaccel_helpers.h"

/* Physical address of @page (a slab's first page). */
phys_addr_t pktaccel_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

/* Kernel (direct-map) address of @page. */
void *pktaccel_page_address(struct page *page)
{
	return page_address(page);
}

/* Reference count of @page: 1 while only the slab owns it. */
int pktaccel_page_count(struct page *page)
{
	return page_count(page);
}

/*
 * Set the direct map of @numpages pages at @addr to a cache mode:
 * 0 = uncached (UC-), 1 = write-combining, 2 = write-back.
 */
int pktaccel_set_memory(void *addr, int numpages, int mode)
{
	unsigned long a = (unsigned long)addr;

	switch (mode) {
	case 0:
		return set_memory_uc(a, numpages);
	case 1:
		return set_memory_wc(a, numpages);
	case 2:
		return set_memory_wb(a, numpages);
	default:
		return -EINVAL;
	}
}

/* @vma's page protection with the cache mode of pktaccel_set_memory(). */
void pktaccel_vma_set_cache_mode(struct vm_area_struct *vma, int mode)
{
	switch (mode) {
	case 0:
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
		break;
	case 1:
		vma->vm_page_prot = pgprot_writecombine(vma->vm_page_prot);
		break;
	default:
		break;
	}
}

/*
 * Whether a log line about a rejected request may be printed now: at most
 * 10 per 5 s for the whole driver (a hostile process can provoke them at
 * will); the kernel prints how many were suppressed.
 */
static DEFINE_RATELIMIT_STATE(pktaccel_reject_rs, 5 * HZ, 10);

int pktaccel_reject_ratelimit(void)
{
	return __ratelimit(&pktaccel_reject_rs);
}

/*
 * The calling process, as (thread group id, address space) identities.
 * Read in C: the Rust bindings' idea of the task_struct layout did not
 * match this kernel's (Task::tgid() read -1 and Task::mm() a pointer into
 * the task itself on the rig's 7.3 build).
 */
int pktaccel_current_tgid(void)
{
	return task_tgid_nr(current);
}

unsigned long pktaccel_current_mm(void)
{
	return (unsigned long)current->mm;
}
