import { z } from 'zod';

/** Priority levels, highest first. The index of a level is its dispatch rank (0 = critical). */
export const PRIORITIES = ['critical', 'high', 'normal', 'low'] as const;
export const PrioritySchema = z.enum(PRIORITIES);
export type Priority = z.infer<typeof PrioritySchema>;

export const CRITICAL = 0;
export const HIGH = 1;
export const NORMAL = 2;
export const LOW = 3;

export function levelOf(p: Priority): number {
  return PRIORITIES.indexOf(p);
}

export function priorityAt(level: number): Priority {
  return PRIORITIES[level] as Priority;
}
